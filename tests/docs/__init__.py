"""The manual's own tests: the site builds with no warning, and the tutorial runs as written."""
