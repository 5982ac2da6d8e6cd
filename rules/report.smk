rule report:
    input:
        per_job(lambda wildcards: pipeline.report_inputs(wildcards.experiment)),
    output:
        html=layout.REPORT_HTML,
        csv=layout.REPORT_CSV,
        json=layout.REPORT_JSON,
        done=touch(layout.REPORT_DONE),
    log:
        layout.REPORT_LOG,
    conda:
        "../workflow/envs/knobsweep.yaml"
    threads: report_threads
    resources:
        **report_resources(),
    params:
        spec=per_job(lambda wildcards: str(pipeline.experiments[wildcards.experiment].path)),
    shell:
        "python -m knobsweep.report {params.spec:q} > {log} 2>&1"
