"""OpenSpiel: the converter (options, seeded positions, rows, the upstream playthroughs) and the
`openspiel` evaluator (answer parsing, legal and outcome scores), plus (slow) a few real GRPO
steps of the tiny model on OpenSpiel data."""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

pyspiel = pytest.importorskip(
    "pyspiel", reason="open_spiel is not installed: `.venv/bin/pip install -e '.[openspiel]'` (`make test` installs it)"
)

from knobsweep.data import convert_to_dir  # noqa: E402
from knobsweep.data import openspiel as source  # noqa: E402
from knobsweep.errors import FieldError, SpecError  # noqa: E402
from knobsweep.io import read_jsonl  # noqa: E402
from knobsweep.rewards import get_evaluator  # noqa: E402
from knobsweep.rewards.openspiel import (  # noqa: E402
    OpenSpielEvaluator,
    board_text,
    legal_moves,
    load_game,
    parse_move,
    unsupported_reason,
)
from knobsweep.spec.sources import OpenSpielOptions, read_options  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
PLAYTHROUGHS = REPO / "tests" / "fixtures" / "openspiel" / "playthroughs"
FIVE_CASES = ["tic_tac_toe", "connect_four", "breakthrough(rows=6,columns=6)", "hex(board_size=5)", "go(board_size=9)"]


def data(**options) -> dict:
    return {"source": "openspiel", "format": "rl", **options}


def small(**options) -> dict:
    return data(**{"cases": ["tic_tac_toe"], "train_size": 10, "eval_size": 5, "max_random_steps": 6, **options})


def truth(row: dict) -> dict:
    return json.loads(row["ground_truth"])


def digest(rows: list[dict]) -> str:
    return hashlib.sha256(json.dumps(rows, sort_keys=True).encode()).hexdigest()


def row_at(load_string: str, actions: list[int], answer: str | None = None) -> dict:
    """The converter's row for the position after `actions` (a test fixture built the real way)."""
    game = load_game(load_string)
    state = game.new_initial_state()
    for action in actions:
        state.apply_action(action)
    moves = list(legal_moves(state))
    return source.task_row(game, load_string, state, "train-0-0", 0, answer or moves[0])


# --- options ---------------------------------------------------------------------------------


def resolved(section: dict) -> dict:
    """A `data` section as the spec resolves it (every default filled in)."""
    return read_options(section).model_dump(mode="json")


def converted(section: dict):
    """What the converter makes of a `data` section, read by the spec's models as the data stage reads it."""
    return source.convert(read_options(section))


def test_defaults_and_games_times_configs_expand_into_cases():
    options = resolved(data(cases=["tic_tac_toe"]))
    assert options["train_size"] == 100 and options["eval_size"] == 20
    assert (options["min_random_steps"], options["max_random_steps"], options["seed"]) == (0, 10, 0)
    assert options["eval_overlap"] == "drop"
    assert OpenSpielOptions.formats() == ("rl",)

    expanded = resolved(data(games=["hex", "go"], game_configs=[{"board_size": 5}, {}]))
    assert expanded["cases"] == ["hex(board_size=5)", "hex", "go(board_size=5)", "go"]
    assert expanded["games"] is None and expanded["game_configs"] is None
    assert resolved(expanded) == expanded  # idempotent: the spec may resolve twice
    several = resolved(data(games=["breakthrough"], game_configs=[{"rows": 6, "columns": 6}]))
    assert several["cases"] == ["breakthrough(columns=6,rows=6)"]  # keys in order
    assert resolved(data(games=["tic_tac_toe"]))["cases"] == ["tic_tac_toe"]


@pytest.mark.parametrize(
    "options, message",
    [
        (
            data(cases=["tic_tac_toe"], train_sise=3),
            r"data.train_sise: unknown key 'train_sise' \(did you mean 'train_size'\?\)",
        ),
        (
            data(cases=["tic_tac_toe"], num_tasks_per_case=3),
            r"data.num_tasks_per_case: renamed to data.train_size \(the train positions of all cases together: ",
        ),
        (
            data(cases=["tic_tac_toe", "connect_four"], train_size=1),
            r"data.train_size: 1 positions for 2 cases: at least "
            r"one each",
        ),
        (data(cases=["tic_tac_toe"], format="sft"), r"data.format: 'sft' is not allowed; allowed: 'rl'"),
        (data(), r"data.cases: required"),
        (data(cases=["tic_tac_toe"], games=["hex"]), r"data.cases: give data.cases or data.games, not both"),
        (data(cases=["tic_tac_toe"], game_configs=[{}]), r"data.game_configs: needs data.games"),
        (data(cases=[]), r"data.cases: \[\]: List should have at least 1 item"),
        (data(cases=["tic_tac_toe", 5]), r"data.cases\[1\]: 5: Input should be a valid string"),
        (
            data(cases=["tic_tac_toe", "tic_tac_toe"]),
            r"data.cases\[1\]: 'tic_tac_toe' is listed twice \(also data.cases\[0\]\)",
        ),
        (
            data(cases=["tic_tac_toe", "tic_tac_teo"]),
            r"data.cases\[1\]: OpenSpiel cannot load 'tic_tac_teo': unknown game 'tic_tac_teo' "
            r"\(did you mean 'tic_tac_toe'",
        ),
        (
            data(cases=["hex(rows=5)"]),
            r"data.cases\[0\]: OpenSpiel cannot load 'hex\(rows=5\)': Unknown parameter 'rows'. "
            r"Available parameters are: board_size",
        ),
        (data(cases=["hex(board_size=five)"]), r"data.cases\[0\]: .*Wrong type for parameter board_size"),
        (
            data(cases=["connect_four", "tic_tac_toe", "goofspiel"]),
            r"data.cases\[2\]: 'goofspiel' is a simultaneous-move game; supported: sequential games "
            r"\(chance nodes are sampled with the task's seed\)",
        ),
        (data(cases=["mfg_crowd_modelling"]), r"data.cases\[0\]: 'mfg_crowd_modelling' has mean_field dynamics"),
        (
            data(cases=["stones_and_gems"]),
            r"data.cases\[0\]: 'stones_and_gems' samples its chance events inside the game",
        ),
        (
            data(games=["hex"], game_configs=[{"board_size": 5}, {"rows": 6}]),
            r"data.games\[0\]: with data.game_configs\[1\]: OpenSpiel cannot load 'hex\(rows=6\)': Unknown parameter",
        ),
        (data(games=["hex(board_size=5)"]), r"data.games\[0\]: must be a game name without parameters"),
        (
            data(games=["hex"], game_configs=[{"board_size": [5]}]),
            r"data.game_configs\[0\].board_size: must be a number",
        ),
        (
            data(games=["hex"], game_configs=["board_size=5"]),
            r"data.game_configs\[0\]: 'board_size=5': Input should "
            r"be a valid dictionary",
        ),
        (
            data(cases=["tic_tac_toe"], train_size=0),
            r"data.train_size: 0 is out of range; allowed: 1 <= value <= 1000000",
        ),
        (data(cases=["tic_tac_toe"], eval_size=None), r"data.eval_size: None: Input should be a valid integer"),
        (data(cases=["tic_tac_toe"], seed=-1), r"data.seed: -1 is out of range; allowed: 0 <= value <= 2147483647"),
        (
            data(cases=["tic_tac_toe"], eval_overlap="warn"),
            r"data.eval_overlap: 'warn' is not allowed; allowed: "
            r"'drop' or 'keep'",
        ),
        (
            data(cases=["tic_tac_toe"], min_random_steps=5, max_random_steps=2),
            r"data.min_random_steps: 5 is more than data.max_random_steps \(2\)",
        ),
    ],
)
def test_bad_options_are_named(options, message):
    with pytest.raises(SpecError, match="--config-json: " + message):
        read_options(options)


def test_fingerprint_is_the_installed_open_spiel():
    from importlib.metadata import version

    assert source.input_fingerprint(read_options(small())) == {"open_spiel": f"open_spiel=={version('open_spiel')}"}


# --- rows ------------------------------------------------------------------------------------


def test_rows_show_a_live_position_and_rebuild_from_their_ground_truth(tmp_path):
    manifest = convert_to_dir(
        data(cases=["tic_tac_toe", "chess", "backgammon", "kuhn_poker"], train_size=32, eval_size=16), tmp_path / "out"
    )
    train = pq.read_table(tmp_path / "out" / "train.parquet").to_pylist()
    evaluation = pq.read_table(tmp_path / "out" / "eval.parquet").to_pylist()
    assert manifest["rows"] == {"train": 32, "eval": len(evaluation)} and manifest["converter_version"] == "1"
    assert [r["row_id"] for r in train[:9]] == [f"train-0-{i}" for i in range(8)] + ["train-1-0"]
    assert set(train[0]) == {
        "row_id",
        "prompt",
        "ground_truth",
        "answer",
        "game",
        "task_seed",
        "player",
        "num_legal_moves",
    }
    for row in train + evaluation:
        gt = truth(row)
        assert gt["game"] == row["game"] and gt["player"] == row["player"] and gt["seed"] == row["task_seed"]
        game = load_game(gt["game"])
        state = game.new_initial_state()
        for action in gt["history"]:
            state.apply_action(action)
        assert not state.is_terminal() and not state.is_chance_node()
        assert state.current_player() == gt["player"]
        assert list(legal_moves(state)) == gt["legal_moves"] and row["num_legal_moves"] == len(gt["legal_moves"])
        assert row["answer"] in gt["legal_moves"]
        (message,) = row["prompt"]
        assert message["role"] == "user"
        assert "\n".join(gt["legal_moves"]) in message["content"]  # one move per line, in action order
        assert board_text(state, gt["player"]).rstrip() in message["content"]
        assert message["content"].endswith(source.INSTRUCTION)
    # A hidden-information game shows the player's own view, not the whole state.
    poker = next(r for r in train if r["game"] == "kuhn_poker")
    state = load_game("kuhn_poker").new_initial_state()
    for action in truth(poker)["history"]:
        state.apply_action(action)
    assert f"```\n{state.observation_string(poker['player'])}\n```" in poker["prompt"][0]["content"]
    # Chance outcomes (the dice, the cards) are part of the history that rebuilds the position.
    for name in ("backgammon", "kuhn_poker"):
        assert load_game(name).new_initial_state().is_chance_node()
        assert all(truth(r)["history"] for r in train if r["game"] == name)


def test_the_same_seed_gives_the_same_states_here_and_in_another_process():
    options = data(
        cases=["tic_tac_toe", "backgammon", "breakthrough(rows=6,columns=6)"], train_size=60, eval_size=15, seed=7
    )
    first, second = converted(options), converted(options)
    assert digest(first.train + first.eval) == digest(second.train + second.eval)
    script = (
        "import hashlib, json, sys; from knobsweep.data import openspiel as s; "
        "from knobsweep.spec.sources import read_options; r = s.convert(read_options(json.loads(sys.argv[1]))); "
        "print(hashlib.sha256(json.dumps(r.train + r.eval, sort_keys=True).encode()).hexdigest())"
    )
    # A different hash seed too: nothing may depend on Python's salted str hashes.
    env = {**os.environ, "PYTHONHASHSEED": "12345"}
    out = subprocess.run(
        [sys.executable, "-c", script, json.dumps(options)], capture_output=True, text=True, env=env, check=True
    ).stdout.strip()
    assert out == digest(first.train + first.eval)

    other = converted({**options, "seed": 8})
    assert [truth(r)["history"] for r in other.train] != [truth(r)["history"] for r in first.train]


def test_task_seeds_and_the_eval_set_do_not_move_with_the_train_size():
    few = converted(small(train_size=3, eval_size=10, max_random_steps=8))
    many = converted(small(train_size=40, eval_size=10, max_random_steps=8))
    assert [r["task_seed"] for r in few.train] == [0, 1, 2]
    assert {r["task_seed"] for r in many.eval} <= set(range(source.EVAL_SEED_OFFSET, source.EVAL_SEED_OFFSET + 10))
    # Train task i is the same position whatever the train size; so is eval task j.
    assert [r["ground_truth"] for r in many.train[:3]] == [r["ground_truth"] for r in few.train]
    few_eval = {r["row_id"]: r["ground_truth"] for r in few.eval}
    assert all(few_eval[r["row_id"]] == r["ground_truth"] for r in many.eval)


def test_eval_positions_that_are_train_positions_are_dropped_and_listed():
    result = converted(small(train_size=30, eval_size=20, max_random_steps=3))
    train_histories = {tuple(truth(r)["history"]) for r in result.train}
    assert result.dropped and all(d["split"] == "eval" for d in result.dropped)
    assert not any(tuple(truth(r)["history"]) in train_histories for r in result.eval)
    assert len(result.eval) + len(result.dropped) == 20
    first = result.dropped[0]
    assert first["reason"].startswith(f"eval-0-{first['line'] - 1} (tic_tac_toe): same position as train-0-")

    with pytest.raises(
        FieldError,
        match=r"data.cases\[0\]: all 5 eval positions of 'tic_tac_toe' are also train "
        r"positions .* or set data.eval_overlap: keep",
    ):
        converted(small(max_random_steps=0))
    kept = converted(small(max_random_steps=0, eval_overlap="keep"))  # every task is the empty board
    assert len(kept.eval) == 5 and not kept.dropped and {truth(r)["history"] == [] for r in kept.eval} == {True}


def test_a_game_that_always_ends_within_the_random_moves_is_an_error():
    with pytest.raises(
        FieldError,
        match=r"data.cases\[0\]: 'tic_tac_toe' train task 0 \(seed 0\): all 100 draws "
        r"of 9..9 random moves ended the game; lower data.max_random_steps",
    ):
        converted(small(min_random_steps=9, max_random_steps=9))


def test_one_thousand_tasks_over_five_cases_convert_quickly():
    """The figure for the report (no wall-time assertion: the machine is shared)."""
    started = time.perf_counter()
    result = converted(data(cases=FIVE_CASES, train_size=1000, eval_size=100))
    elapsed = time.perf_counter() - started
    assert len(result.train) == 1000
    assert {r["row_id"] for r in result.train} >= {f"train-{case}-199" for case in range(5)}  # 200 per case
    print(f"\n1,000 OpenSpiel train tasks (+{len(result.eval)} eval) over 5 cases: {elapsed:.2f} s")


# --- the upstream playthroughs -----------------------------------------------------------------


def parse_playthrough(path: Path) -> tuple[str, list[dict]]:
    """(load string, states): each state's printed fields ("Key()" -> text), its ToString lines
    (the "# " comment lines after "# State N"), and the action applied after it. States the
    file elides show only their action."""
    lines = path.read_text().splitlines()
    states: list[dict] = []
    in_board = False
    for line in lines[1:]:
        if line.startswith("# State "):
            states.append({"board": [], "fields": {}, "action": None, "joint": None})
            in_board = True
        elif not states:
            continue
        elif in_board and line.startswith("#") and not line.startswith("# Apply"):
            states[-1]["board"].append(line[2:])
        else:
            in_board = False
            if " = " in line:
                key, value = line.split(" = ", 1)
                states[-1]["fields"][key] = value
            elif line.startswith("action: "):
                states[-1]["action"] = int(line.removeprefix("action: "))
            elif line.startswith("actions: "):
                states[-1]["joint"] = json.loads(line.removeprefix("actions: "))
    return lines[0].removeprefix("game: "), states


def lines_of(text: str) -> list[str]:
    return [line.rstrip() for line in text.rstrip().splitlines()]


@pytest.mark.parametrize("path", sorted(PLAYTHROUGHS.glob("*.txt")), ids=lambda p: p.stem)
def test_prompts_match_the_upstream_playthroughs(path):
    """Replay the playthrough's actions; at every decision state it prints, the legal moves (and
    the board) we show equal its StringLegalActions() (and ToString / ObservationString)."""
    load_string, states = parse_playthrough(path)
    try:
        game = load_game(load_string)
    except pyspiel.SpielError as error:
        pytest.skip(f"the installed open_spiel wheel has no {load_string!r}: {error}")
    reason = unsupported_reason(game)
    if reason is not None:  # the converter refuses it with this very message
        assert "simultaneous-move" in reason and any(s["joint"] for s in states)
        with pytest.raises(SpecError, match=r"data.cases\[0\]: .* is a simultaneous-move game"):
            read_options(data(cases=[load_string]))
        return
    read_options(data(cases=[load_string]))
    perfect = game.get_type().information == pyspiel.GameType.Information.PERFECT_INFORMATION
    state = game.new_initial_state()
    compared, mismatches = 0, []
    for index, printed in enumerate(states):
        fields = printed["fields"]
        if fields:
            assert json.loads(fields["History()"]) == state.history(), f"state {index}: replay diverged"
            if fields["IsTerminal()"] == "False" and fields["IsChanceNode()"] == "False":
                compared += 1
                player = state.current_player()
                row = source.task_row(game, load_string, state, f"train-0-{index}", 0, next(iter(legal_moves(state))))
                expected_moves = json.loads(fields["StringLegalActions()"])
                if truth(row)["legal_moves"] != expected_moves:
                    mismatches.append(f"state {index} moves: {expected_moves} != {truth(row)['legal_moves']}")
                assert "\n".join(truth(row)["legal_moves"]) in row["prompt"][0]["content"]
                if perfect:
                    expected_board = "\n".join(printed["board"])
                else:
                    key = next(
                        k for k in (f"ObservationString({player})", f"InformationStateString({player})") if k in fields
                    )
                    expected_board = json.loads(fields[key])
                if lines_of(expected_board) != lines_of(board_text(state, player)):
                    mismatches.append(f"state {index} board: {expected_board!r} != {board_text(state, player)!r}")
        if printed["action"] is not None:
            state.apply_action(printed["action"])
    assert compared > 0
    assert not mismatches, f"{len(mismatches)} of {compared} decision states differ: " + "; ".join(mismatches[:3])


# --- the evaluator: parsing ----------------------------------------------------------------

TTT_MOVES = ["x(0,0)", "x(0,1)", "x(1,1)"]


@pytest.mark.parametrize(
    "completion, move",
    [
        ("x(1,1)", "x(1,1)"),
        ("  x(1,1)\n", "x(1,1)"),
        ('"x(1,1)"', "x(1,1)"),
        ("'x(1,1)'.", "x(1,1)"),
        ("`x(1,1)`", "x(1,1)"),
        ('"x(1,1)."', "x(1,1)"),
        ("x(1,1).", "x(1,1)"),
        ("Move: x(1,1)", "x(1,1)"),
        ("move:x(1,1)", "x(1,1)"),
        ("The centre is strongest.\nMove: `x(1,1)`.\n", "x(1,1)"),
        ('MOVE: "X(1,1)"', "x(1,1)"),  # case-insensitive when only one move matches
    ],
)
def test_answers_parse_tolerantly(completion, move):
    assert parse_move(completion, TTT_MOVES) == (move, "")


@pytest.mark.parametrize(
    "completion, reason",
    [
        ("", "empty answer"),
        ("  \n", "empty answer"),
        ("Move:", "nothing after 'Move:'"),
        ("I play x(1,1)", "not a legal move: 'I play x(1,1)' (3 legal moves)"),
        ("x(2,2)", "not a legal move: 'x(2,2)' (3 legal moves)"),
        ("x(1,1) x(0,0)", "not a legal move: 'x(1,1) x(0,0)' (3 legal moves)"),
    ],
)
def test_unparseable_and_illegal_answers_say_why(completion, reason):
    assert parse_move(completion, TTT_MOVES) == (None, reason)


def test_case_folding_never_picks_between_two_moves():
    assert parse_move("BXC3", ["bxc3", "Bxc3"])[0] is None
    assert parse_move("Bxc3", ["bxc3", "Bxc3"]) == ("Bxc3", "")
    assert parse_move("end.", ["end."]) == ("end.", "")  # a move ending in "." matches before stripping


# --- the evaluator: scores -------------------------------------------------------------------


def test_legal_mode_scores_legality_and_an_illegal_move_is_a_valid_zero():
    evaluator = get_evaluator({"name": "openspiel", "reward_mode": "legal"})
    row = row_at("tic_tac_toe", [4, 0])
    result = evaluator("Move: x(2,2)", row)
    assert (result.score, result.valid, result.reason, result.metrics) == (1.0, True, "legal: x(2,2)", {"legal": 1.0})
    taken = evaluator("x(1,1)", row)  # the centre is taken
    assert (taken.score, taken.valid, taken.metrics) == (0.0, True, {"legal": 0.0})
    assert taken.reason == "not a legal move: 'x(1,1)' (7 legal moves)"
    assert evaluator(row["answer"], row).score == 1.0


def test_a_broken_ground_truth_raises_naming_the_row():
    evaluator = OpenSpielEvaluator()
    with pytest.raises(ValueError, match=r"row r7: ground_truth is not an OpenSpiel task"):
        evaluator("x(0,0)", {"row_id": "r7", "ground_truth": "42"})
    with pytest.raises(ValueError, match=r"row \?: ground_truth is not an OpenSpiel task"):
        evaluator("x(0,0)", {})


@pytest.mark.parametrize(
    "options, message",
    [
        ({"reward_mode": "win"}, r"reward.reward_mode: must be one of legal, outcome, got 'win'"),
        ({"reward_mode": "legal", "opponent": "mcts"}, r"reward.opponent: only used with reward_mode 'outcome'"),
        ({"rollouts": 4}, r"reward.rollouts: only used with reward_mode 'outcome'"),
        ({"reward_mode": "outcome", "opponent": "alphazero"}, r"reward.opponent: must be one of random, mcts"),
        (
            {"reward_mode": "outcome", "mcts_simulations": 10},
            r"reward.mcts_simulations: only used with opponent 'mcts'",
        ),
        ({"reward_mode": "outcome", "rollouts": 0}, r"reward.rollouts: must be an integer in 1..10000, got 0"),
        ({"reward_mode": "outcome", "opponent": "mcts", "mcts_simulations": 2.5}, r"reward.mcts_simulations: must be"),
        ({"reward_mode": "outcome", "seed": -3}, r"reward.seed: must be a non-negative integer, got -3"),
    ],
)
def test_bad_evaluator_options_are_named(options, message):
    with pytest.raises(ValueError, match=message):
        get_evaluator({"name": "openspiel", **options})


def test_an_unknown_evaluator_option_gets_a_suggestion():
    with pytest.raises(ValueError, match=r"reward.oponent: unknown option .*did you mean 'opponent'"):
        get_evaluator({"name": "openspiel", "oponent": "mcts"})


def test_outcome_mode_rewards_winning_and_punishes_blundering():
    # x: (0,0) (0,1); o: (1,0) (1,1); x to move. x(0,2) wins at once; anything else lets o win
    # with o(1,2) unless it is that very block.
    row = row_at("tic_tac_toe", [0, 3, 1, 4])
    assert truth(row)["player"] == 0
    random_play = get_evaluator({"name": "openspiel", "reward_mode": "outcome", "rollouts": 16, "seed": 3})
    win = random_play("x(0,2)", row)
    assert (win.score, win.metrics) == (1.0, {"legal": 1.0, "return": 1.0})
    assert win.reason == "x(0,2): mean return 1 over 16 random play-outs"
    corner = random_play("x(2,2)", row)
    assert 0.0 < corner.score < 1.0  # random play-outs: o misses its win sometimes
    assert random_play("x(2,2)", row) == corner  # seeded: the same answer scores the same
    assert random_play("x(1,1)", row).score == 0.0 and random_play("x(1,1)", row).valid  # illegal

    mcts_play = get_evaluator(
        {"name": "openspiel", "reward_mode": "outcome", "opponent": "mcts", "mcts_simulations": 200, "rollouts": 2}
    )
    assert mcts_play("x(0,2)", row).score == 1.0
    assert mcts_play("x(2,2)", row).score == 0.0  # MCTS takes o's win (x did not block)
    assert mcts_play("x(2,2)", row).score < corner.score


def test_outcome_maps_returns_onto_zero_one_and_handles_chance_and_intermediate_rewards():
    game = load_game("2048")  # tiles are chance outcomes; returns are summed intermediate rewards
    state = game.new_initial_state()
    while state.is_chance_node():
        state.apply_action(state.chance_outcomes()[0][0])
    row = source.task_row(game, "2048", state, "train-0-0", 0, next(iter(legal_moves(state))))
    evaluator = OpenSpielEvaluator(reward_mode="outcome", rollouts=2)
    result = evaluator(row["answer"], row)
    assert 0.0 < result.score < 1.0  # returns in [0, 20480] mapped onto [0, 1]
    assert result.score == pytest.approx(result.metrics["return"] / game.max_utility())
    with pytest.raises(
        ValueError,
        match=r"reward.opponent 'mcts' cannot play '2048\(\)': Game must have terminal "
        r"rewards. Use opponent: random",
    ):
        OpenSpielEvaluator(reward_mode="outcome", opponent="mcts")(row["answer"], row)


def test_outcome_refuses_a_ground_truth_that_no_longer_rebuilds():
    row = row_at("tic_tac_toe", [4])
    gt = truth(row)
    stale = {**row, "ground_truth": json.dumps({**gt, "player": 0})}
    with pytest.raises(ValueError, match=r"rebuilds to a position where player 1 moves, not player 0"):
        OpenSpielEvaluator(reward_mode="outcome")(gt["legal_moves"][0], stale)


# --- (slow) the real training stage on OpenSpiel data ---------------------------------------


@pytest.mark.slow
def test_grpo_trains_the_tiny_model_on_openspiel_positions(tmp_path):
    from knobsweep.models.tiny import build_tiny_model

    data_dir = tmp_path / "data"
    convert_to_dir(data(cases=["tic_tac_toe"], train_size=6, eval_size=4, max_random_steps=6, seed=1), data_dir)
    rows = pq.read_table(data_dir / "train.parquet").to_pylist()
    texts = [m["content"] for r in rows for m in r["prompt"]] + [r["answer"] for r in rows]
    model = build_tiny_model(texts, tmp_path / "tiny")
    config = {
        "model": {
            "name": "tiny",
            "lora": {
                "rank": 8,
                "alpha": 16,
                "dropout": 0.05,
                "target_modules": "all-linear",
                "exclude_modules": ["lm_head", "embed_tokens"],
            },
        },
        "train": {
            "method": "grpo",
            "loss": "grpo",
            "learning_rate": 5e-4,
            "epochs": 1,
            "batch_size": 2,
            "kl_beta": None,
            "log_every": 1,
            "trl": {},
        },
        "rollout": {"n": 4, "temperature": 1.0, "top_p": 1.0, "top_k": 0, "max_tokens": 16, "extra_body": {}},
        "reward": {"name": "openspiel", "reward_mode": "legal"},
        "seed": 0,
    }
    out = tmp_path / "train"
    command = [
        sys.executable,
        "-m",
        "accelerate.commands.launch",
        "--cpu",
        "--num_processes",
        "1",
        "--num_machines",
        "1",
        "--mixed_precision",
        "no",
        "--dynamo_backend",
        "no",
        "-m",
        "knobsweep.train",
        "--config-json",
        json.dumps(config),
        "--model",
        str(model),
        "--data",
        str(data_dir),
        "--out",
        str(out),
    ]
    result = subprocess.run(
        command, capture_output=True, text=True, timeout=300, cwd=REPO, env={**os.environ, "OMP_NUM_THREADS": "1"}
    )
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    status = json.loads((out / "status.json").read_text())
    # 6 positions / 2 per step. The random tiny model plays no legal move, so no group has a score spread:
    # the run is EARLY_STOPPED without a learning signal (rewards, rollouts and the adapter still written)
    assert (status["state"], status["step"], status["learned"]) == ("EARLY_STOPPED", 3, False), status
    assert status["reason"].startswith("no learning signal")
    assert yaml.safe_load((out / "run.yaml").read_text())["reward"] == config["reward"]
    metrics = read_jsonl(out / "metrics.jsonl")
    assert [m["step"] for m in metrics] == [1, 2, 3]
    assert all("reward/legal" in m and m["invalid_rate"] == 0.0 for m in metrics)
    rollouts = read_jsonl(out / "rollouts.jsonl")
    assert rollouts and all(r["valid"] and r["row_id"].startswith("train-0-") for r in rollouts)
    assert all(r["reason"].startswith(("legal: ", "not a legal move", "empty answer")) for r in rollouts)
    assert (out / "adapter" / "adapter_config.json").is_file()
