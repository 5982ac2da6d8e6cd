rule evaluate:
    input:
        stage_inputs(pipeline.eval),
    output:
        summary=layout.EVAL_SUMMARY,
        samples=layout.EVAL_SAMPLES,
    log:
        log_path("eval"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.eval)
    resources:
        **job_resources(pipeline.eval, "eval"),
    params:
        args=per_key(pipeline.eval, lambda job: job.args),  # --config-json, --model, --data
        out=layout.EVAL_DIR,
    shell:
        "python -m knobsweep.evaluate {params.args} --out {params.out} > {log} 2>&1"
