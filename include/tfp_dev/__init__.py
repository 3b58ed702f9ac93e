"""Development-only tools for tfp: evaluations and data that the pipeline never imports at run time."""
