"""Code that runs inside the sandbox's worker process (stdlib + landlockpy + pyseccomp only; never the app)."""
