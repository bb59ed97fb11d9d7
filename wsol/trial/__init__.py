"""One trial: its config, the runner that trains and selects on train-fullsup, the scoring of
a model on a split and the pictures a trial leaves."""
