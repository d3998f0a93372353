"""``bz-train`` with one extra plugin that prints the time at the first training step.

Run by ``bench_first_step.py`` in a directory whose ``conf/plugins/first_step.yaml`` lets
``plugins=[console_out,tensorboard,first_step]`` name the plugin. Registering it costs one
import of ``bz_lightning.plugins``, which ``bz-train`` makes anyway. Exits at the first
training batch after printing ``FIRST_STEP <time.time()>``.
"""

import os
import sys
import time

from bz_lightning.plugins import Plugin, register_plugin


class FirstStep(Plugin):
    def start_training_batch(self, context):
        print(f"\nFIRST_STEP {time.time()}", flush=True)
        os._exit(0)


register_plugin("first_step", FirstStep)

from bz_lightning.cli.train import main  # noqa: E402

sys.argv[0] = "bz-train"
main()
