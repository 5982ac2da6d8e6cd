"""OpenSpiel: score one move (the completion) in the game position of a row.

The row's `ground_truth` is JSON written by knobsweep.data.openspiel:
    {"game": load string, "history": [action ids from the root, chance outcomes included],
     "player": the player to move, "legal_moves": [their legal moves as strings], "seed": int}

Parsing the answer (`parse_move`): if the completion contains "Move:" (any case), the answer
is the text after the last one, on its first non-empty line; otherwise it is the whole
completion. Around it, whitespace, matching quotes or backticks ("x", 'x', `x`, ``x``) and a
trailing period are stripped, one layer at a time, and after each layer the text is looked up
among the legal move strings: exactly first, then case-insensitively when that picks one move
only ("E4" finds "e4"; "BXC3" finds nothing when both "bxc3" and "Bxc3" are legal). So
`x(1,1)`, `"x(1,1)".` and `Move: x(1,1)` all parse; "I play x(1,1)" does not.

reward_mode
- legal: 1 if the answer parses to a legal move, else 0. Needs no open_spiel at all: the
  legal moves are in the row.
- outcome: the move is applied to the rebuilt position and the rest of the game is played out
  `rollouts` times, every later move (both sides', the answering player's own included) by the
  `opponent` policy: `random` (uniform over legal moves) or `mcts` (open_spiel's MCTSBot with
  `mcts_simulations` simulations and a RandomRolloutEvaluator); chance nodes are sampled from
  their probabilities. The score is the answering player's mean return mapped from
  [game.min_utility(), game.max_utility()] onto [0, 1]: it estimates the move's value when the
  game continues under that policy. The random stream is seeded from (`seed`, the row's game and
  history), so the same answer to the same row always scores the same, and every answer to a row
  is played out with the same stream (common random numbers: scores differ by the move).
  MCTS sees the true state, hidden information included. Cost per answer at the defaults (8
  play-outs, 50 simulations; one CPU core): random ~3-5 ms, mcts ~0.07 s on tic_tac_toe and
  2-3 s on connect_four or breakthrough(rows=6,columns=6), so size rollouts and
  mcts_simulations to the batch.

An unparseable or illegal answer scores 0 with valid=True (a wrong answer, not an unjudgeable
one); a row whose ground truth is broken or does not rebuild raises (the caller marks the
sample invalid with the message).
"""

from __future__ import annotations

import functools
import hashlib
import json
import math
import os
import re
import sys
import tempfile

from knobsweep.errors import FieldError
from knobsweep.rewards import Evaluation

REWARD_MODES = ("legal", "outcome")
OPPONENTS = ("random", "mcts")
DEFAULT_ROLLOUTS = 8
DEFAULT_MCTS_SIMULATIONS = 50
MCTS_UCT_C = 2.0  # open_spiel's examples use 2 for games with returns in [-1, 1]

_MOVE_PREFIX = re.compile(r"move\s*:", re.IGNORECASE)
_QUOTES = ('"', "'", "`")


# ------------------------------------------------------------------ games (shared with the converter)


@functools.lru_cache(maxsize=64)
def load_game(load_string: str):
    """pyspiel.load_game, registering open_spiel's Python games (python_*) when they are asked for.

    Raises pyspiel.SpielError with OpenSpiel's message for an unknown game or bad parameters.
    """
    import pyspiel

    try:
        return _load_quietly(pyspiel, load_string)
    except pyspiel.SpielError as error:
        if not str(error).startswith("Unknown game") or not load_string.startswith("python_"):
            raise
    import open_spiel.python.games  # noqa: F401  (registers python_*; ~0.2 s, so only on demand)

    return _load_quietly(pyspiel, load_string)


def _load_quietly(pyspiel, load_string: str):
    """pyspiel.load_game without the copy of a failure OpenSpiel's C++ prints to stderr (for an
    unknown game, all ~130 names): the exception carries the message. A successful load's output
    is passed on."""
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            game = pyspiel.load_game(load_string)
        finally:
            os.dup2(saved, 2)
            os.close(saved)
        sink.seek(0)
        printed = sink.read()
    if printed:
        sys.stderr.write(printed.decode(errors="replace"))
    return game


def unsupported_reason(game) -> str | None:
    """Why `game` cannot be turned into one-move tasks, or None when it can."""
    import pyspiel

    game_type = game.get_type()
    dynamics = game_type.dynamics
    if dynamics == pyspiel.GameType.Dynamics.SIMULTANEOUS:
        return (
            "is a simultaneous-move game; supported: sequential games (chance nodes are sampled "
            "with the task's seed); turn_based_simultaneous_game(game=...) makes one sequential"
        )
    if dynamics != pyspiel.GameType.Dynamics.SEQUENTIAL:
        return f"has {dynamics.name.lower()} dynamics; supported: sequential games"
    if game_type.chance_mode == pyspiel.GameType.ChanceMode.SAMPLED_STOCHASTIC:
        return (
            "samples its chance events inside the game, so a position cannot be rebuilt from "
            "its action history; supported: deterministic games and games with explicit chance nodes"
        )
    if game_type.information != pyspiel.GameType.Information.PERFECT_INFORMATION and not (
        game_type.provides_observation_string or game_type.provides_information_state_string
    ):
        return "hides information but provides no observation string to show the player"
    return None


def board_text(state, player: int) -> str:
    """What the player to move sees: the whole state in a perfect-information game, else the
    player's observation string (or, where the game has none, its information-state string)."""
    import pyspiel

    game_type = state.get_game().get_type()
    if game_type.information == pyspiel.GameType.Information.PERFECT_INFORMATION:
        return str(state)
    if game_type.provides_observation_string:
        return state.observation_string(player)
    return state.information_state_string(player)


def legal_moves(state) -> dict[str, int]:
    """The player to move's legal moves, {move string: action id}, in action order.

    Where two actions print alike (none do in the playthroughs the tests replay), the first wins.
    """
    player = state.current_player()
    moves: dict[str, int] = {}
    for action in state.legal_actions():
        moves.setdefault(state.action_to_string(player, action), action)
    return moves


def rebuild_state(truth: dict):
    """The position of a ground truth, replayed from the root; checks it still is the position."""
    game = load_game(truth["game"])
    state = game.new_initial_state()
    for action in truth["history"]:
        state.apply_action(action)
    if state.is_terminal() or state.is_chance_node() or state.current_player() != truth["player"]:
        raise ValueError(
            f"ground truth of {truth['game']!r} rebuilds to a position where player "
            f"{state.current_player()} moves, not player {truth['player']} (a different open_spiel version?)"
        )
    return game, state


# ------------------------------------------------------------------ answers


def parse_move(completion: str, legal: list[str]) -> tuple[str | None, str]:
    """(the legal move the completion names, "") or (None, why not); rules in the module docstring."""
    text = completion
    prefixes = list(_MOVE_PREFIX.finditer(text))
    if prefixes:
        rest = text[prefixes[-1].end() :].strip()
        text = rest.splitlines()[0] if rest else ""
    folded: dict[str, list[str]] = {}
    for move in legal:
        folded.setdefault(move.casefold(), []).append(move)
    seen = set()
    while text not in seen:
        seen.add(text)
        if text in legal:
            return text, ""
        if len(folded.get(text.casefold(), ())) == 1:
            return folded[text.casefold()][0], ""
        text = _strip_one_layer(text)
    shown = text if len(text) <= 60 else text[:57] + "..."
    if not shown:
        return None, "empty answer" if not prefixes else "nothing after 'Move:'"
    return None, f"not a legal move: {shown!r} ({len(legal)} legal moves)"


def _strip_one_layer(text: str) -> str:
    text = text.strip()
    if len(text) >= 2 and text[0] == text[-1] and text[0] in _QUOTES:
        return text[1:-1]
    if text.endswith("."):
        return text[:-1]
    return text


def read_ground_truth(row: dict) -> dict:
    """The row's ground truth as a dict; raises ValueError naming the row when it is unusable."""
    raw = row.get("ground_truth")
    try:
        truth = json.loads(raw) if isinstance(raw, str) else None
    except ValueError:
        truth = None
    keys = {"game": str, "history": list, "player": int, "legal_moves": list}
    if not isinstance(truth, dict) or any(not isinstance(truth.get(k), t) for k, t in keys.items()):
        raise ValueError(
            f"row {row.get('row_id', '?')}: ground_truth is not an OpenSpiel task "
            f"(JSON with {', '.join(keys)}): {str(raw)[:120]!r}"
        )
    return truth


# ------------------------------------------------------------------ the evaluator


class OpenSpielEvaluator:
    """Scores one move: legality (`reward_mode: legal`) or its played-out value (`outcome`).

    `opponent`, `rollouts`, `mcts_simulations` and `seed` belong to `outcome` (and
    `mcts_simulations` to `opponent: mcts`); setting one where it has no effect is an error,
    so a sweep over it cannot silently produce identical runs.
    """

    name = "openspiel"

    def __init__(
        self,
        reward_mode: str = "legal",
        opponent: str | None = None,
        rollouts: int | None = None,
        mcts_simulations: int | None = None,
        seed: int | None = None,
    ):
        if reward_mode not in REWARD_MODES:
            raise FieldError("reward.reward_mode", f"must be one of {', '.join(REWARD_MODES)}, got {reward_mode!r}")
        if reward_mode == "legal":
            for option, value in (
                ("opponent", opponent),
                ("rollouts", rollouts),
                ("mcts_simulations", mcts_simulations),
                ("seed", seed),
            ):
                if value is not None:
                    raise FieldError(
                        f"reward.{option}",
                        "only used with reward_mode 'outcome' (reward_mode is 'legal'); "
                        "remove it or set reward_mode: outcome",
                    )
        opponent = "random" if opponent is None else opponent
        if opponent not in OPPONENTS:
            raise FieldError("reward.opponent", f"must be one of {', '.join(OPPONENTS)}, got {opponent!r}")
        if opponent == "random" and mcts_simulations is not None:
            raise FieldError("reward.mcts_simulations", "only used with opponent 'mcts' (opponent is 'random')")
        self.reward_mode = reward_mode
        self.opponent = opponent
        self.rollouts = _positive_int("rollouts", DEFAULT_ROLLOUTS if rollouts is None else rollouts, 10_000)
        self.mcts_simulations = _positive_int(
            "mcts_simulations", DEFAULT_MCTS_SIMULATIONS if mcts_simulations is None else mcts_simulations, 100_000
        )
        self.seed = 0 if seed is None else seed
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise FieldError("reward.seed", f"must be a non-negative integer, got {seed!r}")

    def __call__(self, completion: str, row: dict) -> Evaluation:
        truth = read_ground_truth(row)
        move, why = parse_move(completion, truth["legal_moves"])
        if move is None:
            return Evaluation(score=0.0, reason=why, metrics={"legal": 0.0})
        if self.reward_mode == "legal":
            return Evaluation(score=1.0, reason=f"legal: {move}", metrics={"legal": 1.0})
        mean_return, score = self._outcome(truth, move)
        return Evaluation(
            score=score,
            reason=f"{move}: mean return {mean_return:.3g} over {self.rollouts} {self.opponent} play-outs",
            metrics={"legal": 1.0, "return": mean_return},
        )

    def _outcome(self, truth: dict, move: str) -> tuple[float, float]:
        """(the player's mean return after `move`, that return mapped onto [0, 1])."""
        import numpy as np

        game, state = rebuild_state(truth)
        actions = legal_moves(state)
        if move not in actions:
            raise ValueError(
                f"{truth['game']!r}: {move!r} is in the row's legal moves but not the rebuilt "
                f"position's (a different open_spiel version?)"
            )
        low, high = game.min_utility(), game.max_utility()
        if not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ValueError(f"{truth['game']!r}: utilities [{low}, {high}] cannot be mapped onto [0, 1]")
        player = truth["player"]
        state.apply_action(actions[move])
        rng = np.random.RandomState(self._stream_seed(truth))
        policy = self._policy(game, rng)
        total = 0.0
        for _ in range(1 if state.is_terminal() else self.rollouts):
            total += _play_out(state.clone(), policy, rng)[player]
        mean_return = total / (1 if state.is_terminal() else self.rollouts)
        return mean_return, min(1.0, max(0.0, (mean_return - low) / (high - low)))

    def _stream_seed(self, truth: dict) -> int:
        # sha256, not hash(): Python salts string hashes per process.
        key = json.dumps([self.seed, truth["game"], truth["history"]]).encode()
        return int.from_bytes(hashlib.sha256(key).digest()[:4], "little")

    def _policy(self, game, rng):
        if self.opponent == "random":

            def random_move(state):
                actions = state.legal_actions()
                return actions[rng.randint(len(actions))]

            return random_move
        from open_spiel.python.algorithms import mcts

        try:
            bot = mcts.MCTSBot(
                game,
                MCTS_UCT_C,
                self.mcts_simulations,
                mcts.RandomRolloutEvaluator(n_rollouts=1, random_state=rng),
                random_state=rng,
            )
        except ValueError as error:  # e.g. "Game must have terminal rewards."
            raise ValueError(
                f"reward.opponent 'mcts' cannot play {str(game)!r}: {error} Use opponent: random"
            ) from error
        return bot.step

    def __repr__(self) -> str:
        if self.reward_mode == "legal":
            return "OpenSpielEvaluator(reward_mode='legal')"
        mcts = f", mcts_simulations={self.mcts_simulations}" if self.opponent == "mcts" else ""
        return (
            f"OpenSpielEvaluator(reward_mode='outcome', opponent={self.opponent!r}, "
            f"rollouts={self.rollouts}{mcts}, seed={self.seed})"
        )


def _play_out(state, policy, rng) -> list[float]:
    """Play `state` to the end (chance nodes sampled, moves by `policy`); the players' returns."""
    while not state.is_terminal():
        if state.is_chance_node():
            outcomes, probabilities = zip(*state.chance_outcomes())
            state.apply_action(outcomes[rng.choice(len(outcomes), p=probabilities)])
        else:
            state.apply_action(policy(state))
    return state.returns()


def _positive_int(option: str, value, limit: int) -> int:
    if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= limit:
        raise FieldError(f"reward.{option}", f"must be an integer in 1..{limit}, got {value!r}")
    return value
