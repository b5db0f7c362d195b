"""Quality review of the models in service: performance against final reads, drift, the champion/challenger
gate, the quality API, page, report and CLI. Imports neither torch nor ``training``.
"""
