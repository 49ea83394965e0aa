// setup.py compiles this file with CPU_CAPABILITY and the matching instruction-set flags.
#include "../kernels_impl.h"
