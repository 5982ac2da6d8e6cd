# Shared wildcard constraints: stage keys are 16 hex digits, so stage folders never collide.
wildcard_constraints:
    key="[0-9a-f]{16}",
    experiment="[A-Za-z0-9][A-Za-z0-9_.-]*",


def log_path(stage):
    return layout.LOGS.format(stage=stage, key="{key}")


def mem_mb(table):
    return lambda wc: table[wc.key].resources["mem_mb"]


def runtime(table):
    return lambda wc: table[wc.key].resources["runtime_min"]


def gpus(table):
    return lambda wc: table[wc.key].resources["gpus"]


def cpus(table):
    return lambda wc: table[wc.key].resources["cpus"]
