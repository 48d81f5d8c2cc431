"""The execute pipeline's steps, one small function each, in the modules named for what they
do; ``envelopes/gate/pipeline.py`` says their order."""
