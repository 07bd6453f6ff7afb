"""Core, the lowest layer (imports no other part of the package): the domain's vocabulary (`landmarks`: the 8
landmarks, 4 groups, classes and tasks), `errors` (InputError), argument declarations and checks (`arguments`),
numerics (`precision`, `kernels`), threads and memory (`utils`), Ray plumbing (`distributed`) and `version`."""
