/*
 * A file of the policy layer that includes a core header. It must NOT
 * compile: policy/ is built with only policy/, util/ and include/ on its
 * include path (CMakeLists.txt), so the engine's internals are out of reach.
 * ctest "layering/policy_cannot_include_core" expects this build to fail.
 */
#include "engine.h"

int air__layer_probe(void);

int
air__layer_probe(void)
{
    return 0;
}
