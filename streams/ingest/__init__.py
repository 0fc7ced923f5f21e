"""Getting events in: the producer SDK (`sdk.Publisher`), `shredline publish`, `shredline generate`."""
