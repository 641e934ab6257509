"""Calibration: measure a GPU through the model runner, fit a profile, derive one for another
GPU. Sits above ``kvsim.gpu``; what it writes, ``kvsim.cost`` reads."""
