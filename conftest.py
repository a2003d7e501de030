"""The checkout's pytest set-up: the depth-claims plugin (harness/pytest_plugin.py).

    pytest claims/ --model pythia-6.9b --model gpt2-xl --lens logit --device cuda

An installed package registers the plugin through its ``pytest11`` entry point, under the
same name, so pytest loads it once either way; this line covers a checkout whose package
is not installed, or was installed before the entry point existed.
"""

pytest_plugins = ["harness.pytest_plugin"]
