"""The yardsticks of run/benchmark.py and the tests: the VRNN in plain PyTorch, and the timers."""
