"""EAS on Fashion-MNIST (``experiments/eas_fmnist.py``), sized for a shared 2-core CPU.

``default``: 8,000 training and 3,000 validation images of the full Fashion-MNIST; the
EAS "small" start net (four blocks of one 16-filter conv, a 64-unit dense layer),
trained for 4 epochs before the search; six episodes of five children, each child one
Net2Deeper and one Net2Wider step from the best network so far. A child is trained from
its inherited weights as in the paper (§4.1: SGD with Nesterov momentum 0.9, weight decay
1e-4, batch 64, a cosine schedule from 0.02) for a twentieth of the paper's 20 epochs:
one epoch of the 8,000 images, 125 steps. ``paper_budget``: the same data and start
network with the paper's budget unscaled, each child trained for 20 epochs, 450 sampled
networks in episodes of 10 children of four Net2Deeper steps and one Net2Wider step
(days of this CPU). The strategy's own settings of the paper come with ``--preset paper``
(:data:`nasjax.search.strategies.eas.PAPER`). ``tiny`` runs the whole pipeline on the
synthetic data set in seconds (the test suite runs it).
"""

# The training of a sampled network in the EAS paper (§4.1).
PAPER_CHILD_TRAIN = {"epochs": 20.0, "batch_size": 64, "optimizer": "sgd",
                     "learning_rate": 0.02, "momentum": 0.9, "nesterov": True,
                     "weight_decay": 1e-4, "schedule": "cosine"}
# The share of the paper's epochs a child trains for in ``default``.
CHILD_SCALE = 1 / 20

VARIANTS = {
    "default": {
        "dataset": "fashion_mnist", "data_limit": 8000, "val_fraction": 0.05,
        "pretrain": {"epochs": 4.0, "batch_size": 128, "learning_rate": 0.05},
        "train": {**PAPER_CHILD_TRAIN, "epochs": CHILD_SCALE * PAPER_CHILD_TRAIN["epochs"]},
        "eas": {"family": "plain_cnn", "start": {"variant": "small"}, "num_children": 5,
                "steps": ["deeper", "wider"], "learning_rate": 0.02,
                "filter_levels": [16, 32, 64, 96, 128], "unit_levels": [64, 128, 256]},
        "max_evals": 31,
        "arms": ["eas", "random"],
        "seeds": [0, 1, 2],
    },
    "paper_budget": {
        "dataset": "fashion_mnist", "data_limit": 8000, "val_fraction": 0.05,
        "pretrain": {"epochs": 4.0, "batch_size": 128, "learning_rate": 0.05},
        "train": dict(PAPER_CHILD_TRAIN),
        "eas": {"family": "plain_cnn", "start": {"variant": "small"}, "num_children": 10,
                "steps": ["deeper", "deeper", "deeper", "deeper", "wider"]},
        "max_evals": 451,
        "arms": ["eas", "random"],
        "seeds": [0],
    },
    "tiny": {
        "dataset": "synthetic", "data_limit": None, "val_fraction": 0.1,
        "pretrain": {"epochs": 1.0, "batch_size": 32, "max_steps": 2},
        "train": {"epochs": 1.0, "batch_size": 32, "max_steps": 2},
        "eas": {"family": "plain_cnn",
                "start": {"variant": "tiny", "num_blocks": 2, "filters": 4, "units": 8},
                "num_children": 4, "steps": ["deeper", "wider"], "hidden": 16,
                "max_len": 16, "max_blocks": 4, "filter_levels": [4, 8],
                "unit_levels": [8, 16, 32], "growth_levels": [4, 8, 12, 16, 24, 32]},
        "max_evals": 3,
        "arms": ["eas", "random"],
        "seeds": [0],
    },
}
