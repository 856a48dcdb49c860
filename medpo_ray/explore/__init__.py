"""The run explorer (`medpo-ray explore --run DIR`): a web page over a run directory that shows what the
model learned from (pairs with their images, spans and the critic's verdict), the training curves, and
takes a clinician's review of each pair."""
