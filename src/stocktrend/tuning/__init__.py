"""stocktrend.tuning: Ray Tune + Optuna/ASHA search over data, model and training configs."""
