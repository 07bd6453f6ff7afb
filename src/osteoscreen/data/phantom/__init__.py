"""The synthetic phantom cohort (docs/phantom.md): `synthesis` writes a cohort (`synth`); `anatomy` the jaw
outline and landmark sites; `bone` the trabecular field and cortex by bone state; `imaging_chain` the projection,
MTF, noise and detector; `grids` the shared sampling grids."""
