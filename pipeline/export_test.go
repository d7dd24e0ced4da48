package pipeline

// HeldMax is heldMax, for the tests.
const HeldMax = heldMax
