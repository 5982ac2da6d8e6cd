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
    threads: cpus(pipeline.merge)
    resources:
        mem_mb=mem_mb(pipeline.merge),
        runtime=runtime(pipeline.merge),
    conda:
        "../workflow/envs/knobsweep.yaml"
    shell:
        "python -m knobsweep.merge --base {params.base:q} --adapter {params.adapter}"
        " --out {output} > {log} 2>&1"
