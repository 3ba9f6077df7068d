#include "convert/prediction_probe.h"

#include <cstdio>
#include <filesystem>
#include <vector>

#include "convert/convert.h"
#include "graph/builder.h"
#include "graph/model_writer.h"
#include "networks/unet.h"
#include "runtime/ort_session.h"

namespace sdonnx {

namespace fs = std::filesystem;

Status ProbePredictionType(const Checkpoint& checkpoint, const std::string& work_dir,
                           ModelSpec* spec) {
  const fs::path dir = fs::path(work_dir) / "probe";
  std::error_code ec;
  fs::create_directories(dir, ec);
  SDONNX_RETURN_IF_ERROR(CheckUNetHeads(*spec).WithContext("building the probe UNet"));
  GraphBuilder builder(checkpoint, kDefaultOpset, "unet_probe");
  SDONNX_RETURN_IF_ERROR(BuildUNet(builder, spec->unet).WithContext("building the probe UNet"));
  ModelWriteOptions options;
  options.external_data = ExternalData::kAlways;
  SDONNX_ASSIGN_OR_RETURN(auto files,
                          WriteModel(builder, checkpoint, dir.string(), "unet.onnx", options));
  double mean = 0;
  {
    SDONNX_ASSIGN_OR_RETURN(std::unique_ptr<OrtModel> unet, OrtModel::Load(files.front().path));
    const std::int64_t c = spec->unet.in_channels;
    std::vector<float> x(static_cast<std::size_t>(c * 8 * 8), 0.5f);
    std::vector<float> context(static_cast<std::size_t>(2 * spec->unet.context_dim), 0.5f);
    SDONNX_ASSIGN_OR_RETURN(
        auto out, unet->Run({{"sample", HostTensor::Float({1, c, 8, 8}, x)},
                             {"timestep", HostTensor::Float({1}, {999.0f})},
                             {"encoder_hidden_states",
                              HostTensor::Float({1, 2, spec->unet.context_dim}, context)}},
                            {"out_sample"}));
    const std::vector<float>& values = out["out_sample"].f32;
    for (float v : values) mean += v - 0.5;
    mean /= static_cast<double>(values.size());
  }
  fs::remove_all(dir, ec);
  spec->prediction_type = mean < -1.0 ? "v_prediction" : "epsilon";
  char basis[160];
  std::snprintf(basis, sizeof(basis),
                "UNet probe: mean(out - x) = %.3f at x = 0.5, t = 999 (v-prediction below -1)",
                mean);
  spec->prediction_basis = basis;
  return Status::Ok();
}

}  // namespace sdonnx
