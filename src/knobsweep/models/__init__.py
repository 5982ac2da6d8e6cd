"""Models built locally: `tiny` is an offline stand-in for a hub model (tests and the demo).

Import `knobsweep.models.tiny` directly; this package does not import it eagerly so that
`python -m knobsweep.models.tiny` runs without a double-import warning.
"""
