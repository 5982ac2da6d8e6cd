"""The experiment report and the statistics behind its verdicts.

`build` writes results/<experiment>/{report.html, summary.csv, summary.json} (`build_report`);
`collect` reads the stage outputs into frames and `html` renders them; `stats`, `manytoone`,
`decision`, `history` and `power` decide (which arm is better, beyond noise) and render nothing.
Nothing is imported here, so a command that only decides (`knobsweep plan`, `next`) does not pay
for pandas and plotly.
"""
