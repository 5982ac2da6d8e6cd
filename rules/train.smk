# Training, then the merge of its adapter into the base model, in one job: the merge depends on
# nothing but this run's adapter, so a job of its own would cache nothing more and cost a scheduler
# round trip (and, in a sweep of thousands of runs, a third of Snakemake's jobs). Its resources are
# training's plus `resources.merge` (knobsweep.resources.train_job_resources).
rule train:
    input:
        stage_inputs(pipeline.train),
    # Only the adapter and the merged model are declared: Snakemake deletes a failed job's outputs,
    # and the logs, status.json and checkpoints of a FAILED / CANCELLED run must stay for the report
    # and the resume (a merge that fails costs a resume from the final checkpoint, not a re-train).
    output:
        adapter=directory(layout.TRAIN_ADAPTER),
        merged=directory(layout.MERGE_DIR),
    log:
        train=log_path("train"),
        merge=log_path("merge"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.train)
    resources:
        **job_resources(pipeline.train, "train"),
    params:
        # `accelerate launch ...` (under `srun` on several nodes; an FSDP / DeepSpeed config file)
        launch=from_resources(
            pipeline.train,
            lambda job: launch_command(
                job.resources, job.config["train"].get("distributed", "none"), config_dir=ACCELERATE_CONFIGS
            ),
        ),
        args=per_key(pipeline.train, lambda job: job.args),
        base=per_key(pipeline.train, lambda job: job.model),
        out=layout.TRAIN_DIR,
        status=layout.TRAIN_STATUS,  # the merge skips a run that never learned (EARLY_STOPPED)
    shell:
        "{params.launch} -m knobsweep.train {params.args} --out {params.out} > {log.train} 2>&1"
        " && python -m knobsweep.merge --base {params.base:q} --adapter {output.adapter} --out {output.merged}"
        " --status {params.status}"
        " > {log.merge} 2>&1"
