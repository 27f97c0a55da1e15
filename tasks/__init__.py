"""The paper's tasks for the xconv harness: data, models, losses and metrics.

Each task is a LightningModule built on :class:`tasks.base.XConvTask`; data
loading for every task lives in :mod:`tasks.data`. Nothing here imports Hydra:
``xconv/run.py`` wires configs to these classes.
"""
