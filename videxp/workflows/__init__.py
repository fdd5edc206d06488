"""The jobs behind videxp-sample and videxp-evaluate: the standard one and the research workflows."""
