"""Starts Petrel's python3.11 runtime (_petrel_runtime, beside this file)."""
import _petrel_runtime

_petrel_runtime.main()
