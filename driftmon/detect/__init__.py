"""The detect stage: each closed window against its reference (:mod:`.detector`),
with the divergences (:mod:`.divergence`), the p-value of "no change"
(:mod:`.significance`) and the result record they produce (:mod:`.result`)."""
