"""The tuning loop: `knobsweep suggest` reads a finished sweep's curves and names the knob that addresses
each symptom (`rules.RULES`, one table), `knobsweep next` writes the follow-up experiment file."""
