# Rung evaluations (early_stop:): a run's training up to a rung (in its train folder, on the train stage's
# resources), the rung's eval of that segment's model (the eval stage's resources), and the experiment's
# decision at the rung (short: a local rule). Each is its own job with its own cached output, so a rerun
# after a cancel resumes at the right rung; knobsweep.early_stop.plan says what waits for what.
rule rung_train:
    input:
        stage_inputs(pipeline.rung_train),
    output:
        segment=layout.RUNG_SEGMENT,
    log:
        log_path("rung_train"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.rung_train)
    resources:
        **job_resources(pipeline.rung_train, "train"),
    params:
        launch=from_resources(
            pipeline.rung_train,
            lambda job: launch_command(
                job.resources, job.config["train"].get("distributed", "none"), config_dir=ACCELERATE_CONFIGS
            ),
        ),
        args=per_key(pipeline.rung_train, lambda job: job.args),  # --rung, --rung-out, --decision
        out=per_key(pipeline.rung_train, lambda job: job.out),  # the run's train folder
    shell:
        "{params.launch} -m knobsweep.train {params.args} --out {params.out} > {log} 2>&1"


rule rung_eval:
    input:
        stage_inputs(pipeline.rung_eval),
    output:
        summary=layout.RUNG_EVAL_SUMMARY,
        samples=layout.RUNG_EVAL_SAMPLES,
    log:
        log_path("rung_eval"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.rung_eval)
    resources:
        **job_resources(pipeline.rung_eval, "eval"),
    params:
        args=per_key(pipeline.rung_eval, lambda job: job.args),  # --config-json, --segment, --prompts, --model, --data
        out=layout.RUNG_EVAL_DIR,
    shell:
        "python -m knobsweep.early_stop.rung_eval {params.args} --out {params.out} > {log} 2>&1"


rule rung_decision:
    input:
        stage_inputs(pipeline.rung_decision),
    output:
        decision=layout.RUNG_DECISION,
    log:
        log_path("rung_decision"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.rung_decision)
    resources:
        **job_resources(pipeline.rung_decision, "report"),
    params:
        config=per_key(pipeline.rung_decision, lambda job: job.config_json),
        out=layout.RUNG_DECISION_DIR,
    shell:
        "python -m knobsweep.early_stop.rung_decision --config-json {params.config:q} --out {params.out} > {log} 2>&1"
