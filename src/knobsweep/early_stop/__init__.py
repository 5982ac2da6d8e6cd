"""Early stopping of losing arms at rungs: at given fractions of training each arm still running is
compared with the baseline at the same step, and an arm worse beyond noise stops there.
`knobsweep.early_stop.decide` holds the statistics of that decision (docs/early_stop.md)."""
