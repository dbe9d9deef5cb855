"""The planted-solution test of SMASH (``tests/test_planted.py`` holds the task and the
other weight-sharing strategies' tests; this one is a file of its own so that the test
runners can run it beside them).

SMASH searches its memory-bank space, not NB201's cells: the teacher is the largest of 16
distinct random networks of a two-block space, and SMASH, its hypernetwork trained for
1,000 steps on the teacher's labels, must rank the teacher's architecture near the top of
the 16 by its own score, the validation accuracy with generated weights. Measured (task
seeds 0-4, docs/results/oneshot.md): ranks 1, 2, 5, 2, 2 (mean 2.4); with the
hypernetwork's update stalled (learning rate 1e-12) 3, 12, 4, 11, 16 (mean 9.2); with the
labels made by a 17th network that is not a candidate, the same largest candidate ranks
8, 8, 15, 5, 5 (mean 8.2), so its place comes from being the teacher, not from its size.
"""

import test_planted as planted


def test_smash_ranks_the_teachers_network_near_the_top():
  planted.check_mean_ranks("smash")
