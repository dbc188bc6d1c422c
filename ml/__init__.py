"""ClinPredict ML library: schema -> validation -> features -> training -> evaluation -> export -> tracking.

Plain Python (no Django). Entry points: ``ml.pipeline.train_run`` and the CLI ``python -m ml``.
"""
