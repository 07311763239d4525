/* fuzz-vdi.c: fuzz-vpc.c's target with the VDI driver (see there). */
#define FUZZ_FMT IMG_FORMAT_VDI
#define FUZZ_NAME "fuzz-vdi"
#include "fuzz-vpc.c"
