rule evaluate:
    input:
        lambda wc: pipeline.eval[wc.key].inputs,
    output:
        summary=layout.EVAL_SUMMARY,
        samples=layout.EVAL_SAMPLES,
    params:
        config=lambda wc: pipeline.eval[wc.key].config_json,
        model=lambda wc: pipeline.eval[wc.key].model,
        data=lambda wc: layout.DATA_DIR.format(key=pipeline.eval[wc.key].data),
        out=layout.EVAL_DIR,
    log:
        log_path("eval"),
    threads: job_threads(pipeline.eval)
    resources:
        **job_resources(pipeline.eval, "eval"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    shell:
        "python -m knobsweep.evaluate --config-json {params.config:q} --model {params.model:q}"
        " --data {params.data} --out {params.out} > {log} 2>&1"
