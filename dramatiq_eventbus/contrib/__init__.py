"""Optional integrations, each needing its extra (``pip install 'dramatiq-eventbus[opentelemetry]'``...).

Nothing in the core imports this package: an integration is switched on by importing it.
"""
