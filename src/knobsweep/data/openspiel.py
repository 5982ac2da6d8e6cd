"""OpenSpiel game positions -> RL rows: "here is the board and your legal moves; pick one".

Cases. `cases` is a list of OpenSpiel load strings ("tic_tac_toe", "hex(board_size=5)",
"breakthrough(rows=6,columns=6)", ...). Alternatively `games` (names without parameters) and
`game_configs` (parameter mappings) give one case per (game, config) pair, games outer and
configs inner: games [hex, go] x game_configs [{board_size: 5}, {board_size: 7}] ->
hex(board_size=5), hex(board_size=7), go(board_size=5), go(board_size=7); parameters are written
in key order, and an empty mapping {} means the game's defaults. Without `game_configs` each
game is one case with its defaults. Every pair must be valid: a parameter one game lacks fails.
`cases` and `games` are exclusive; the options model expands `games` x `game_configs` into
`cases` (and sets both to null), so equal case lists give equal resolved options.

Supported: sequential games, with or without chance nodes (open_spiel's explicit chance
outcomes, sampled with the task's seed), perfect or imperfect information. Simultaneous-move,
mean-field and internally-sampled games are rejected at validation, as are unknown games and
bad parameters (DataError naming data.cases[i] and OpenSpiel's message).

Tasks. Task i of a case is drawn by a random.Random seeded with its task seed (integer seeding
and randrange are the same across Python versions, platforms and processes; no global RNG,
no hash()): from the root, a number of moves drawn uniformly from min_random_steps..max_random_steps
is played uniformly at random, chance nodes are sampled from their probabilities (and do not
count as moves), and the position reached, once no chance node is pending, is shown. A draw
that ends the game is drawn again from the same stream (up to 100 times).

Train / eval. `train_size` / `eval_size` positions of all cases together are spread evenly over
the cases (the first ones get one more while the remainder lasts). Train task i of a case has seed
`seed + i`; eval task j has seed `seed + 1_000_000 + j`, so the seed ranges never overlap and the
eval set does not move when train_size changes. Small games repeat positions, so by
default (`eval_overlap: drop`) an eval task whose position (same action history, chance outcomes
included) is also a train task of its case is dropped and listed in the manifest's `dropped`
("line" = eval task index + 1); a case left with no eval task at all is an error. With
`eval_overlap: keep` they stay (for games too small to hold out positions, e.g. kuhn_poker).

Rows: row_id "<split>-<case index>-<task index>", prompt (one user message: the game, whose
turn, the board as text — str(state) for perfect information, else the player's observation
string — and the legal moves as state.action_to_string strings, one per line), ground_truth
(JSON: {"game", "history", "player", "legal_moves", "seed"}, enough to rebuild the position;
see knobsweep.rewards.openspiel), answer (one legal move drawn with the task's seed: a
reference answer that scores 1 under reward_mode legal, not a good move; the training stage's
evaluator smoke test and the tiny model's tokenizer read it), and the columns game, task_seed,
player, num_legal_moves.
"""

from __future__ import annotations

import importlib.metadata
import json
import random
from typing import TYPE_CHECKING

from knobsweep.data import ConversionResult, messages_type
from knobsweep.errors import FieldError
from knobsweep.rewards.openspiel import board_text, legal_moves, load_game
from knobsweep.spec.sources import OpenSpielOptions

if TYPE_CHECKING:
    import pyarrow as pa

CONVERTER_VERSION = "1"

# Eval task j has seed seed + EVAL_SEED_OFFSET + j; train_size is at most this, so the ranges stay apart.
EVAL_SEED_OFFSET = OpenSpielOptions.MAX_TASKS
MAX_DRAWS = 100  # draws per task before a game that always ends is an error

INSTRUCTION = "Answer with exactly one legal move, written exactly as in the list, and nothing else."


def row_schema() -> pa.Schema:
    """The rows' schema (train and eval)."""
    import pyarrow as pa

    return pa.schema(
        [
            ("row_id", pa.string()),
            ("prompt", messages_type()),
            ("ground_truth", pa.string()),
            ("answer", pa.string()),
            ("game", pa.string()),
            ("task_seed", pa.int64()),
            ("player", pa.int64()),
            ("num_legal_moves", pa.int64()),
        ]
    )


def input_fingerprint(options: OpenSpielOptions) -> dict[str, str]:
    """No input files: positions come from the games, so the installed open_spiel is the input."""
    return {"open_spiel": f"open_spiel=={importlib.metadata.version('open_spiel')}"}


# ------------------------------------------------------------------ tasks


def draw_state(game, rng: random.Random, min_steps: int, max_steps: int):
    """A position (a decision node) drawn with `rng`, or None when every draw ended the game."""
    for _ in range(MAX_DRAWS):
        state = game.new_initial_state()
        steps = rng.randint(min_steps, max_steps)
        while not state.is_terminal():
            if state.is_chance_node():
                state.apply_action(sample_chance(state, rng))
            elif steps == 0:
                return state
            else:
                actions = state.legal_actions()
                state.apply_action(actions[rng.randrange(len(actions))])
                steps -= 1
    return None


def sample_chance(state, rng: random.Random) -> int:
    """A chance outcome drawn with its probability (a cumulative sum: no numpy, stable)."""
    outcomes = state.chance_outcomes()
    point = rng.random()
    total = 0.0
    for action, probability in outcomes:
        total += probability
        if point < total:
            return action
    return outcomes[-1][0]  # rounding left the sum a hair under 1


def task_row(game, load_string: str, state, row_id: str, task_seed: int, answer: str) -> dict:
    """The RL row showing `state` (a decision node) to the player to move; `answer` is one of
    its legal moves."""
    import pyspiel

    player = state.current_player()
    moves = list(legal_moves(state))
    if answer not in moves:
        raise ValueError(f"{row_id}: reference answer {answer!r} is not a legal move")
    num_players = game.num_players()
    who = "the only player" if num_players == 1 else f"player {player} of {num_players} (numbered from 0)"
    listing = "\n".join(moves)
    perfect = game.get_type().information == pyspiel.GameType.Information.PERFECT_INFORMATION
    view = "The position" if perfect else "What you can see (the rest is hidden from you)"
    prompt = (
        f"You are playing {game.get_type().long_name} (OpenSpiel game `{load_string}`) as {who}, "
        f"and it is your turn.\n\n"
        f"{view}:\n```\n{board_text(state, player).rstrip()}\n```\n\n"
        f"Your legal moves ({len(moves)}), one per line:\n```\n{listing}\n```\n\n{INSTRUCTION}"
    )
    truth = {
        "game": load_string,
        "history": list(state.history()),
        "player": player,
        "legal_moves": moves,
        "seed": task_seed,
    }
    return {
        "row_id": row_id,
        "prompt": [{"role": "user", "content": prompt}],
        "ground_truth": json.dumps(truth),
        "answer": answer,
        "game": load_string,
        "task_seed": task_seed,
        "player": player,
        "num_legal_moves": len(moves),
    }


def _case_rows(
    label: str, game, load_string: str, split: str, case_index: int, seeds: range, options: OpenSpielOptions
) -> list[dict]:
    rows = []
    for task, task_seed in enumerate(seeds):
        rng = random.Random(task_seed)
        state = draw_state(game, rng, options.min_random_steps, options.max_random_steps)
        if state is None:
            raise FieldError(
                label,
                f"{load_string!r} {split} task {task} (seed {task_seed}): all {MAX_DRAWS} draws "
                f"of {options.min_random_steps}..{options.max_random_steps} random moves ended the game; "
                "lower data.max_random_steps",
            )
        moves = list(legal_moves(state))
        answer = moves[rng.randrange(len(moves))]
        rows.append(task_row(game, load_string, state, f"{split}-{case_index}-{task}", task_seed, answer))
    return rows


def convert(options: OpenSpielOptions) -> ConversionResult:
    """Draw train_size train and eval_size eval positions, spread over the cases."""
    base = options.seed
    train: list[dict] = []
    evaluation: list[dict] = []
    dropped: list[dict] = []
    sizes = zip(options.per_case(options.train_size), options.per_case(options.eval_size))
    for case_index, (load_string, (train_tasks, eval_tasks)) in enumerate(zip(options.cases, sizes)):
        label = f"data.cases[{case_index}]"
        game = load_game(load_string)
        train_rows = _case_rows(label, game, load_string, "train", case_index, range(base, base + train_tasks), options)
        eval_start = base + EVAL_SEED_OFFSET
        eval_rows = _case_rows(
            label, game, load_string, "eval", case_index, range(eval_start, eval_start + eval_tasks), options
        )
        # Positions are identified by their action history (chance outcomes included).
        train_ids = {}
        for row in train_rows:
            train_ids.setdefault(_history(row), row["row_id"])
        kept = []
        for task, row in enumerate(eval_rows):
            same = train_ids.get(_history(row))
            if same is None or options.eval_overlap == "keep":
                kept.append(row)
            else:
                dropped.append(
                    {
                        "split": "eval",
                        "line": task + 1,
                        "reason": f"{row['row_id']} ({load_string}): same position as {same}",
                    }
                )
        if not kept:
            raise FieldError(
                label,
                f"all {len(eval_rows)} eval positions of {load_string!r} are also train positions "
                f"(a small game, or few positions within {options.max_random_steps} random moves); lower "
                "data.train_size, raise data.max_random_steps, or set data.eval_overlap: keep",
            )
        train += train_rows
        evaluation += kept
    return ConversionResult(
        train=train,
        eval=evaluation,
        schema=row_schema(),
        options=options.model_dump(mode="json"),
        inputs={"open_spiel": f"open_spiel=={importlib.metadata.version('open_spiel')}"},
        dropped=dropped,
    )


def _history(row: dict) -> tuple[int, ...]:
    return tuple(json.loads(row["ground_truth"])["history"])
