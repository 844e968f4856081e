# The container image recipe (deploy/Containerfile, deploy/image/) and the Kubernetes manifests
# (deploy/kubernetes/), checked without a container engine or a cluster.
# Debian's python3, with python3-yaml, rather than whichever python3 comes first on PATH (a
# pyenv shim, say).
find_program(ATLS_PYTHON3 python3 PATHS /usr/bin NO_DEFAULT_PATH)
if(NOT ATLS_PYTHON3)
  find_program(ATLS_PYTHON3 python3 REQUIRED)
endif()

# The image's build steps outside a container: the files the build stage copies configure and
# install (with this tree's binaries: no rebuild), the staged binaries run, and every library
# they load comes from deploy/image/runtime-packages. Only on a build like the image's: an
# unoptimised sanitizer build links shared libraries (boost_system, boost_container) and
# runtimes that the image's Release build does not.
if(NOT ATLS_SANITIZE)
  add_test(NAME "image: the Containerfile's steps, run outside a container, stage atlsd and atlsctl with every library they load listed in runtime-packages"
           COMMAND ${ATLS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/image_recipe_check.py
                   --source ${PROJECT_SOURCE_DIR} --build ${PROJECT_BINARY_DIR})
  set_tests_properties(
    "image: the Containerfile's steps, run outside a container, stage atlsd and atlsctl with every library they load listed in runtime-packages"
    PROPERTIES TIMEOUT 180)

  add_test(NAME "image: the recipe check rejects each deliberately broken copy of the recipe with the fault's message"
           COMMAND ${ATLS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/image_recipe_broken_test.py
                   ${PROJECT_SOURCE_DIR} ${PROJECT_BINARY_DIR})
  set_tests_properties(
    "image: the recipe check rejects each deliberately broken copy of the recipe with the fault's message"
    PROPERTIES TIMEOUT 300)
endif()

# The manifests: a schema check written against the fields they use (Debian 12 has no offline
# Kubernetes schema validator), both TPM variants, and the check's own negative tests.
set(atls_kubernetes ${PROJECT_SOURCE_DIR}/deploy/kubernetes)
add_test(NAME "kubernetes: the manifests (device-plugin and hostPath variants) pass the schema and consistency check"
         COMMAND ${ATLS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/kubernetes_check.py
                 --atlsd-config ${atls_kubernetes}/base/atlsd.yaml
                 ${atls_kubernetes} ${atls_kubernetes}/overlays/hostpath)
add_test(NAME "kubernetes: the manifest check rejects each deliberately broken copy with the fault's message"
         COMMAND ${ATLS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/kubernetes_broken_test.py
                 ${PROJECT_SOURCE_DIR})
# kubectl is not a Debian 12 package of the setup (kubernetes-client is 1.20, older than native
# sidecars); where one is installed, what `kubectl kustomize` renders must be what the check
# resolved, and pass the check too.
add_test(NAME "kubernetes: kubectl kustomize renders the objects the check resolved, and they pass it"
         COMMAND ${ATLS_PYTHON3} ${CMAKE_CURRENT_SOURCE_DIR}/kubernetes_check.py --compare-kubectl
                 --atlsd-config ${atls_kubernetes}/base/atlsd.yaml
                 ${atls_kubernetes} ${atls_kubernetes}/overlays/hostpath)
set_tests_properties(
  "kubernetes: kubectl kustomize renders the objects the check resolved, and they pass it"
  PROPERTIES SKIP_RETURN_CODE 77)

# The ConfigMap's atlsd config run by the built atlsd with a provisioned swtpm.
atls_test(kubernetes_sidecar kubernetes_sidecar_test.cpp)
target_link_libraries(kubernetes_sidecar PRIVATE Boost::json)
