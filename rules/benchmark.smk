# lm-evaluation-harness on a merged model or the base model (eval.benchmarks), on the eval's resources.
rule benchmark:
    input:
        stage_inputs(pipeline.benchmark),
    output:
        summary=layout.BENCHMARK_SUMMARY,
    log:
        log_path("benchmark"),
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: job_threads(pipeline.benchmark)
    resources:
        **job_resources(pipeline.benchmark, "eval"),
    params:
        args=per_key(pipeline.benchmark, lambda job: job.args),  # --config-json, --model
        out=layout.BENCHMARK_DIR,
    shell:
        "python -m knobsweep.benchmarks {params.args} --out {params.out} > {log} 2>&1"
