"""Helpers of the test suite, one concern each: answers (copier.yml: questions, choices, validators), pairs (pairwise
coverage), combos (the answer sets rendered, built and run), render (Copier), engine (commands, Docker, image
names, build timings), containers (a running container and HTTP to it), builds (locked, built and trained
projects), dockerfile (a parsed Dockerfile), k8s_tools, torch_index (PyTorch's wheel index on the loopback),
file_stats (length and repetition of a generated file: tools/file_stats.py)."""
