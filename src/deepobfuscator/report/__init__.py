"""`deepobf report`: the utility-privacy comparison of attacked runs as HTML (self-contained) and Markdown."""
