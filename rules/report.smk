rule report:
    input:
        lambda wc: pipeline.report_inputs(wc.experiment),
    output:
        html=layout.REPORT_HTML,
        csv=layout.REPORT_CSV,
        json=layout.REPORT_JSON,
    params:
        spec=lambda wc: str(pipeline.experiments[wc.experiment].path),
    log:
        "results/logs/report/{experiment}.log",
    threads: report_threads
    resources:
        **report_resources(),
    conda:
        "../workflow/envs/knobsweep.yaml"
    shell:
        "python -m knobsweep.report {params.spec:q} > {log} 2>&1"
