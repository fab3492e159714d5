"""Tables, figures and printed summaries of the pipeline's results."""
