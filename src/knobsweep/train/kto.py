"""KTO: TRL's KTOTrainer on unpaired kto rows (method "kto").

Rows (the data contract's kto format): prompt (messages), completion (messages: one assistant
message), label (bool: desirable or not). Both labels must occur. `train.kto` sets beta (how far
the policy may move from the reference) and desirable_weight / undesirable_weight (to balance
unequal label counts: TRL suggests desirable_weight * n_desirable / (undesirable_weight *
n_undesirable) in [1, 4/3]). Sequences are truncated at train.max_context_length.

TRL estimates KTO's KL term from the other rows of the same device batch, in dataset order
(sequential sampling), so the rows are shuffled within each label with the run's seed and the
two labels interleaved evenly (`interleave_labels`: a file sorted by label would otherwise give
one-label batches, and a batch without both labels logs no margin), and a device batch needs
at least 2 rows (the batch plan, `batching.batch_plan`, enforces it).
The metrics: rewards/chosen, rewards/rejected, rewards/margins (chosen minus rejected implicit
reward; the health monitor warns when it stays negative after train.health.kto_margin_warmup
steps), kl, logps/*.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from knobsweep.spec.schema import TrainJob
from knobsweep.train.callbacks import KTO_COLUMNS
from knobsweep.train.method import Method, message_problem, raise_bad_rows, row_ids

COLUMNS = ("prompt", "completion", "label")


def interleave_labels(dataset, seed: int):
    """The rows shuffled within each label (seeded), then merged so that both labels are spread
    evenly over the file: sequential batches each hold both kinds in the file's proportion."""
    import random

    rng = random.Random(seed)
    groups = {True: [], False: []}
    for index, label in enumerate(dataset["label"]):
        groups[bool(label)].append(index)
    for indices in groups.values():
        rng.shuffle(indices)
    total = len(dataset)
    # Row k of each label goes to position (k + 0.5) / count of the way through the file.
    keyed = [
        ((k + 0.5) / len(indices), label, index) for label, indices in groups.items() for k, index in enumerate(indices)
    ]
    order = [index for _, _, index in sorted(keyed, key=lambda item: (item[0], not item[1]))]
    assert len(order) == total
    return dataset.select(order)


def _label(value: Any) -> bool | None:
    if hasattr(value, "item"):  # numpy bool
        value = value.item()
    return value if isinstance(value, bool) else None


class KTOMethod(Method):
    name, title = "kto", "KTO"
    columns = KTO_COLUMNS
    summary_keys = ("loss", "rewards/chosen", "rewards/rejected", "rewards/margins", "kl", "tokens_per_s")

    def __init__(self):
        self.counts = {True: 0, False: 0}

    def validate_rows(self, job: TrainJob, dataset):
        missing = [c for c in COLUMNS if c not in dataset.column_names]
        if missing:
            raise ValueError(
                f"train.parquet: KTO needs columns prompt, completion, label; missing "
                f"{', '.join(missing)} (columns: {', '.join(dataset.column_names)}); "
                "set data.format: kto in the experiment"
            )
        bad = []
        self.counts = {True: 0, False: 0}
        for row_id, row in zip(row_ids(dataset), dataset.select_columns(list(COLUMNS))):
            problem = next(
                (f"{column}: {p}" for column in ("prompt", "completion") if (p := message_problem(row[column]))), None
            )
            label = _label(row["label"])
            if problem is None and label is None:
                problem = f"label {row['label']!r}, expected true or false"
            if problem is None and isinstance(row["prompt"], str) != isinstance(row["completion"], str):
                problem = "prompt and completion must both be messages (or both text)"
            if problem:
                bad.append((row_id, problem))
            else:
                self.counts[label] += 1
        raise_bad_rows(bad, len(dataset), "no usable kto example")
        if not self.counts[True] or not self.counts[False]:
            only = "desirable (true)" if self.counts[True] else "undesirable (false)"
            raise ValueError(
                f"train.parquet: all {len(dataset)} kto rows are labelled {only}; KTO needs both "
                "desirable and undesirable examples"
            )
        return interleave_labels(dataset.select_columns(list(COLUMNS)), job.seed)

    def validate_with_tokenizer(self, job: TrainJob, dataset, tokenizer, out_dir: Path, is_main: bool) -> dict:
        options = job.train.kto
        if not isinstance(dataset[0]["prompt"], str) and not tokenizer.chat_template:
            raise ValueError(
                "the model's tokenizer has no chat template, so conversational kto rows cannot be "
                "rendered (use a chat model, or text rows)"
            )
        desirable, undesirable = self.counts[True], self.counts[False]
        return {
            "rows": len(dataset),
            "desirable": desirable,
            "undesirable": undesirable,
            # TRL's advice: keep this in [1, 4/3] through desirable_weight / undesirable_weight
            "weighted_ratio": round(
                options.desirable_weight * desirable / (options.undesirable_weight * undesirable), 4
            ),
        }

    def method_kwargs(self, job: TrainJob, plan, use_cuda: bool) -> dict[str, Any]:
        # TRL's KTOConfig fields of the same names; sequences are truncated at the context budget
        return {**job.train.kto.model_dump(), "max_length": job.train.max_context_length}

    def describe(self, job: TrainJob, dataset) -> str:
        options = job.train.kto
        return (
            f"{len(dataset)} rows ({self.counts[True]} desirable, {self.counts[False]} undesirable), "
            f"beta {options.beta}, weights {options.desirable_weight} / {options.undesirable_weight}"
        )
