/* fuzz-vdi.c: fuzz-vpc.c's target with the VDI driver (see there). */
#define FUZZ_VDI 1
#include "fuzz-vpc.c"
