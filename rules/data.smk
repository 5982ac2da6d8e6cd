rule convert_data:
    output:
        train=layout.DATA_TRAIN,
        eval=layout.DATA_EVAL,
        manifest=layout.DATA_MANIFEST,
    log:
        log_path("data"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.data)
    resources:
        **job_resources(pipeline.data, "data"),
    params:
        config=per_key(pipeline.data, lambda job: job.config_json),
        out=layout.DATA_DIR,
    shell:
        "python -m knobsweep.data --config-json {params.config:q} --out {params.out} > {log} 2>&1"


rule tiny_model:
    input:
        stage_inputs(pipeline.tiny),
    output:
        directory(layout.TINY_MODEL),
    log:
        log_path("tiny"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.tiny)
    resources:
        **job_resources(pipeline.tiny, "data"),
    params:
        data=per_key(pipeline.tiny, lambda job: layout.DATA_DIR.format(key=job.data)),
    shell:
        "python -m knobsweep.models.tiny --data {params.data} --out {output} > {log} 2>&1"
