"""``python -m lit_bvllm.cli``: the ``lit_bvllm`` command."""

from lit_bvllm.cli import main

main()
