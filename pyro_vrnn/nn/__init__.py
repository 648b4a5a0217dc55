"""The networks of the VRNN and the SRNN: feature extractors, prior, encoder, decoder, recurrence."""
