"""lm-eval's process_results for tasks exported from reasoning-gym by knobsweep.benchmarks.export: a completion
is scored as knobsweep's training reward scores it (reasoning-gym's extract_answer, then the task's score_answer)."""

import json

from knobsweep.rewards.reasoning_gym import task_score


def process_results(doc, results):
    answer, score = task_score(results[0], doc["task"], json.loads(doc["entry"]))
    return {"score": score, "answered": float(answer is not None)}
