"""Honest evaluation of a model artifact: test metrics with block-bootstrap intervals,
baselines, a backtest from prices, plots and a report (see ``report.evaluate_artifact``)."""
