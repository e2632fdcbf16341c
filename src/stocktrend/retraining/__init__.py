"""A model's life after its first deployment: retrain on new rows, compare the challenger
with the champion on one comparison block neither has seen, then shadow and promote.

``plan``: the comparison block and the challenger's explicit training window;
``compare``: both versions scored on the block, the paired decision;
``lock``: one retrain per model folder at a time; ``state``: what the promotion log says
is pending. ``ray_jobs/retrain.py`` is the job that strings them together.
"""
