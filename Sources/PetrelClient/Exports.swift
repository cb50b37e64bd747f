// The client signs with the same SigV4 code the daemon verifies with.
@_exported import PetrelSigV4
