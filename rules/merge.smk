rule merge:
    input:
        lambda wc: pipeline.merge[wc.key].inputs,
    output:
        directory(layout.MERGE_DIR),
    params:
        base=lambda wc: pipeline.merge[wc.key].model,
        adapter=layout.TRAIN_ADAPTER,
    log:
        log_path("merge"),
    threads: job_threads(pipeline.merge)
    resources:
        **job_resources(pipeline.merge, "merge"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    shell:
        "python -m knobsweep.merge --base {params.base:q} --adapter {params.adapter}"
        " --out {output} > {log} 2>&1"
